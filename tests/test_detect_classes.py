"""Kernel-class patterns: real engine names fall in the class the detector reasons with."""

from __future__ import annotations

import numpy as np
import pytest

from kat_gui.detect import classify as C
from kat_gui.events import CopyKind, EventKind

CASES = [
    ("ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)", C.COLLECTIVE),
    ("ncclKernel_SendRecv_RING_SIMPLE_Sum_int8_t(ncclDevComm*, unsigned long, ncclWork*)", C.COLLECTIVE),
    (
        "void vllm::cross_device_reduce_1stage<__nv_bfloat16, 4>(vllm::RankData*, vllm::RankSignals, int)",
        C.COLLECTIVE,
    ),
    ("void tensorrt_llm::kernels::ar_fusion::allreduce_fusion_kernel_oneshot_lamport<...>", C.COLLECTIVE),
    ("void deep_ep::intranode::dispatch<8, 768, 8192>(int4*, float*)", C.COLLECTIVE),
    ("void dpsk::ep::combine<...>(...)", C.COLLECTIVE),
    (
        "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize64x128x64_warpgroupsize1x1x1_execute_segment_k_off_kernel",
        C.COMPUTE,
    ),
    ("void cutlass::device_kernel<cutlass::gemm::kernel::GemmUniversal<...>>", C.COMPUTE),
    ("void flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4>, true>", C.COMPUTE),
    ("fmha_v2_flash_attention_bf16_64_128_S_q_kv_128_causal_sm90_kernel", C.COMPUTE),
    ("nvjet_tst_128x256_64x4_1x2_h_bz_coopB_TNT", C.COMPUTE),
    ("void flash_fwd_splitkv_kernel<Flash_fwd_kernel_traits<128, 64, 128, 4>, false>", C.MEMORY),
    ("void vllm::paged_attention_v2_kernel<__nv_bfloat16, 128>", C.MEMORY),
    ("void flashinfer::BatchDecodeWithPagedKVCacheKernel<...>", C.MEMORY),
    (
        "void vllm::rms_norm_kernel<c10::BFloat16>(c10::BFloat16*, c10::BFloat16 const*, float, int, int)",
        C.MEMORY,
    ),
    ("void vllm::act_and_mul_kernel<c10::BFloat16, &vllm::silu_kernel<c10::BFloat16>>", C.MEMORY),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::FillFunctor<float>>", C.MEMORY),
    (
        "void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::ArgMaxOps<float>>>",
        C.MEMORY,
    ),
    ("void flashinfer::sampling::TopKTopPSamplingFromProbKernel<...>", C.MEMORY),
    ("void vllm::reshape_and_cache_flash_kernel<__nv_bfloat16>", C.MEMORY),
]


@pytest.mark.parametrize(("name", "code"), CASES)
def test_kernel_names(name, code):
    assert C.classify_name(name) == code, C.CLASS_NAMES[C.classify_name(name)]


def test_kernel_class_names_for_gui():
    assert C.kernel_class(CASES[0][0]) == "collective"
    assert C.kernel_class("mystery_kernel_xyz") == "other"


def test_event_classes_memcpy_direction_and_coll_column():
    names = ["Memcpy HtoD (Pinned -> Device)", "Memcpy DtoD (Device -> Device)", "my_kernel"]
    nc = C.classify_strings(names)
    cc = C.copy_class_strings(names)
    kind = np.array([EventKind.MEMCPY, EventKind.MEMCPY, EventKind.KERNEL, EventKind.MEMCPY], np.uint8)
    name = np.array([0, 1, 2, 2], np.int32)
    coll = np.array([-1, -1, 5, -1], np.int32)
    ck = np.array([0, 0, 0, CopyKind.DTOH], np.int8)
    cls = C.event_classes(kind, name, coll, ck, nc, cc)
    assert cls.tolist() == [C.COPY_HOST, C.COPY_PEER, C.COLLECTIVE, C.COPY_HOST]


def test_bad_pattern_file(tmp_path, monkeypatch):
    from kat_gui.errors import KatInputError

    p = tmp_path / "k.toml"
    p.write_text('order = ["x"]\n[classes.x]\nkind = "compute"\npatterns = ["(unclosed"]\n')
    with pytest.raises(KatInputError):
        C.classify_name("gemm", p)

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

# AMD (ROCm): Tensile / hipBLASLt GEMMs, composable kernel and aiter, MIOpen, rocPRIM, RCCL.
AMD_CASES = [
    ("Cijk_Alik_Bljk_BBS_BH_Bias_HA_S_SAV_UserArgs_MT256x32x64_MI16x16x1_SN_LDSB1_AFC1_AFEM1", C.COMPUTE),
    ("Cijk_Ailk_Bljk_HHS_BH_MT128x128x32_MI32x32x8x1_SN_1LDSB0_APM1_ABV0_ACED0_AF0EM1", C.COMPUTE),
    ("Custom_Cijk_Alik_Bljk_F8BS_BH_Bias_SHB_HA_S_SAV_UserArgs_MT256x256x128_MI16x16x1", C.COMPUTE),
    ("_ZN2ck16tensor_operation6device37kernel_batched_gemm_xdlops_bwd_weightINS_47GridwiseGemm", C.COMPUTE),
    ("_ZN2ck16tensor_operation6device12_GLOBAL__N_139kernel_grouped_conv_fwd_xdl_cshuffle_v3", C.COMPUTE),
    ("_ZN7ck_tile6kentryILi2ENS_38FmhaBatchPrefillWithPagedKVCacheKernelINS_40BlockFmha", C.COMPUTE),
    ("_ZN5aiter30fmoe_bf16_g1u1_vs_silu_1tg_32xE", C.COMPUTE),
    ("igemm_fwd_gtcx3_nhwc_bf16_bx0_ex1_bt128x128x32_wt32x32x8_ws1x1_wr2x2", C.COMPUTE),
    ("miopenSp3AsmConv_v21_1_3_gfx9_fp32_stride1", C.COMPUTE),
    ("MIOpenConvUni", C.COMPUTE),
    ("void paged_attention_ll4mi_QKV_mfma16_kernel<0, __hip_bfloat16, __hip_bfloat16>", C.MEMORY),
    (
        "_ZN5aiter24add_rmsnorm_quant_kernelIDF16bDF16bLi256ELi16ELb1ELb0ELb1ELi1EEEvPT0_PT_PfS4_S4_S4_",
        C.MEMORY,
    ),
    ("_ZN7ck_tile6kentryILi1ENS_12Rmsnorm2dFwdINS_27Rmsnorm2dFwdPipelineOnePass", C.MEMORY),
    ("SubTensorOpWithScalar1d", C.MEMORY),
    ("Op2dTensorGeneric", C.MEMORY),
    ("MIOpenBatchNormFwdTrainSpatial", C.MEMORY),
    ("MIOpenPoolingForwardNDNCHW", C.MEMORY),
    ("batched_transpose_32x32_half", C.MEMORY),
    (
        "void rocprim::ROCPRIM_400200_NS::detail::trampoline_kernel<rocprim::detail::wrapped_scan_config>",
        C.MEMORY,
    ),
    ("ncclDevKernel_Generic(ncclDevKernelArgsStorage<4096ul>)", C.COLLECTIVE),
    ("void mscclpp::allreduce8<__hip_bfloat16>(...)", C.COLLECTIVE),
]

# Operation names of framework timelines (Chrome traces: Megatron-style timers).
TIMELINE_CASES = [
    ("forward-compute", C.COMPUTE),
    ("backward-compute", C.COMPUTE),
    ("grads-reduce-scatter", C.COLLECTIVE),
    ("params-all-gather", C.COLLECTIVE),
    ("layernorm-grads-all-reduce", C.COLLECTIVE),
    ("all-grads-sync", C.COLLECTIVE),
    ("forward-send", C.COLLECTIVE),
    ("backward-recv", C.COLLECTIVE),
    ("send-forward-recv-backward", C.COLLECTIVE),
    ("optimizer-copy-to-main-grad", C.MEMORY),
]


@pytest.mark.parametrize(("name", "code"), CASES + AMD_CASES + TIMELINE_CASES)
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


AMD_TRACES = [
    "kineto/tracelens/mi300__Qwen_Qwen1.5-0.5B-Chat__1016005.json.gz",
    "kineto/tracelens/mi300__resnet_act_checkpoint.json.gz",
    "kineto/tracelens/inference__sglang_decode__sglang_Qwen3-8B_decode.json.gz",
]


@pytest.mark.parametrize("rel", AMD_TRACES)
def test_amd_kernel_time_lands_in_known_classes(rel, shared_data):
    """On the real MI300X traces at least 90 % of the kernel time is in a known class (compute, memory,
    collective); GEMMs (Tensile ``Cijk_``) are compute."""
    from kat_gui.ingest import kineto
    from kat_gui.ingest.base import IngestOptions

    trace = kineto.read(shared_data / rel, IngestOptions(rank=0))
    ev = trace.events
    k = ev["kind"] == EventKind.KERNEL
    dur = (ev["end_ns"] - ev["start_ns"])[k]
    cls = C.classify_strings(trace.strings)[ev["name"][k]]
    known = dur[cls != C.OTHER].sum() / dur.sum()
    assert known >= 0.9, known
    gemm = np.array([trace.strings[i].startswith("Cijk_") for i in ev["name"][k]])
    assert gemm.any() and (cls[gemm] == C.COMPUTE).all()

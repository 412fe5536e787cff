"""Kernel names of three inference engines, as their profiler traces spell them.

Names follow real traces (vLLM, SGLang and TensorRT-LLM on H100; PyTorch/NCCL kernels as Kineto writes them).
Only the *name* and the presence of collective args differ between vocabularies; the timing model is shared.
"""

from __future__ import annotations

from dataclasses import dataclass

_BF = "__nv_bfloat16"

_TORCH_EMBED = (
    "void at::native::(anonymous namespace)::indexSelectLargeIndex<c10::BFloat16, long, unsigned int, 2, 2, -2, "
    "true>(at::cuda::detail::TensorInfo<c10::BFloat16, unsigned int>, at::cuda::detail::TensorInfo<c10::BFloat16 "
    "const, unsigned int>, at::cuda::detail::TensorInfo<long const, unsigned int>, int, int, unsigned int, "
    "unsigned int, long)"
)
_TORCH_SOFTMAX = (
    "void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float, float, float, "
    "at::native::(anonymous namespace)::SoftMaxForwardEpilogue>(float*, float const*, int)"
)
_TORCH_ARGMAX = (
    "void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::ArgMaxOps<float>, unsigned int, "
    "long, 4, 4> >(at::native::ReduceOp<float, at::native::ArgMaxOps<float>, unsigned int, long, 4, 4>)"
)
_TORCH_TOFLOAT = (
    "void at::native::vectorized_elementwise_kernel<4, at::native::bfloat16tofloat32_copy_kernel_cuda("
    "at::TensorIteratorBase&)::{lambda(c10::BFloat16)#1}, std::array<char*, 2ul> >(int, "
    "at::native::bfloat16tofloat32_copy_kernel_cuda(at::TensorIteratorBase&)::{lambda(c10::BFloat16)#1}, "
    "std::array<char*, 2ul>)"
)
_XMMA = "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize{}_warpgroupsize{}_execute_segment_k_off_kernel__5x_cublas"


def _xmma(decode: bool, big: bool) -> str:
    if decode:
        return _XMMA.format("64x128x64" if big else "64x64x64", "1x1x1")
    return _XMMA.format("256x128x64" if big else "128x128x64", "2x1x1" if big else "1x1x1")


def _nccl(op: str, proto: str, new_sig: bool) -> str:
    sig = "(ncclDevKernelArgsStorage<4096ul>)" if new_sig else "(ncclDevComm*, unsigned long, ncclWork*)"
    if op == "SendRecv":
        return f"ncclDevKernel_SendRecv{sig}"
    if op == "AllGather":
        return f"ncclDevKernel_AllGather_RING_{proto}{sig}"
    return f"ncclDevKernel_AllReduce_Sum_bf16_RING_{proto}{sig}"


def _nccl_proto(nbytes: float) -> str:
    return "LL" if nbytes < 64 * 1024 else ("LL128" if nbytes < 4 * 1024 * 1024 else "SIMPLE")


@dataclass(frozen=True)
class Vocabulary:
    """How one engine names its kernels and whether its collectives carry ``Collective name`` args."""

    name: str
    collective_args: (
        bool  # torch.distributed (c10d) path: Kineto adds Collective name / Seq / Process Group...
    )
    comm_stream: int  # stream of collective kernels (c10d runs NCCL on its own stream)
    fused_allreduce_norm: bool  # TensorRT-LLM fuses residual add + RMSNorm into the all-reduce kernel
    split_decode_attention: bool  # vLLM paged attention v2 = a partition kernel + a reduce kernel
    fused_rope_kv: bool  # TensorRT-LLM applies RoPE and writes the KV cache in one kernel
    nccl_driver_launch: (
        bool  # NCCL launched through cuLaunchKernelEx (cuda_driver) rather than cudaLaunchKernel
    )

    def kernel(self, key: str, decode: bool, tp: int, nbytes: float = 0.0, cross_node: bool = False) -> str:
        """The kernel name of op ``key`` in a decode (True) or prefill step."""
        v = self.name
        if key == "embed":
            return _TORCH_EMBED
        if key in ("to_float",):
            return _TORCH_TOFLOAT
        if key == "softmax":
            return _TORCH_SOFTMAX
        if key in ("qkv_gemm", "o_gemm", "gate_up_gemm", "down_gemm", "lm_head"):
            big = key in ("gate_up_gemm", "lm_head", "qkv_gemm")
            if v == "sglang":
                if decode:
                    return (
                        "nvjet_tst_64x8_64x16_4x1_v_bz_TNT"
                        if big
                        else "nvjet_tst_64x8_64x16_2x1_v_bz_splitK_TNT"
                    )
                return (
                    "nvjet_tst_256x128_64x4_2x1_v_bz_coopA_TNT"
                    if big
                    else "nvjet_tst_128x128_64x4_1x2_h_bz_TNT"
                )
            if key == "lm_head" and decode and v == "vllm":
                return (
                    "void cutlass::Kernel2<cutlass_80_wmma_tensorop_bf16_s161616gemm_bf16_32x32_128x2_tn_align8>("
                    "cutlass_80_wmma_tensorop_bf16_s161616gemm_bf16_32x32_128x2_tn_align8::Params)"
                )
            return _xmma(decode, big)
        if key in ("allreduce", "allgather", "send", "recv"):
            return self._comm(key, tp, nbytes, cross_node)
        table = _NAMES[v]
        if key == "final_norm":
            key = "fused_norm"
        if key == "attn":
            return table["attn_decode" if decode else "attn_prefill"]
        return table[key]

    def _comm(self, key: str, tp: int, nbytes: float, cross_node: bool) -> str:
        new_sig = self.name == "sglang"
        if key in ("send", "recv"):
            return _nccl("SendRecv", "", new_sig)
        if key == "allgather":
            return _nccl("AllGather", "LL" if nbytes < 256 * 1024 else "LL128", new_sig)
        if cross_node or self.name == "sglang":
            return _nccl("AllReduce", _nccl_proto(nbytes), new_sig)
        if self.name == "vllm":
            if nbytes < 512 * 1024:
                return f"void vllm::cross_device_reduce_1stage<{_BF}, {tp}>(vllm::RankData*, vllm::RankSignals, vllm::Signal*, {_BF}*, int, int)"
            if nbytes < 8 * 1024 * 1024:
                return f"void vllm::cross_device_reduce_2stage<{_BF}, {tp}>(vllm::RankData*, vllm::RankSignals, vllm::Signal*, {_BF}*, int, int)"
            return _nccl("AllReduce", _nccl_proto(nbytes), False)
        # trtllm
        shot = "oneshot_lamport" if nbytes < 1024 * 1024 else "twoshot_sync"
        return (
            f"void tensorrt_llm::kernels::ar_fusion::allreduce_fusion_kernel_{shot}<{_BF}, {tp}, true, "
            f"(tensorrt_llm::kernels::ar_fusion::AllReduceFusionPattern)1>("
            f"tensorrt_llm::kernels::ar_fusion::AllReduceFusionParams<{_BF}>)"
        )


_NAMES: dict[str, dict[str, str]] = {
    "vllm": {
        "rmsnorm": "void vllm::rms_norm_kernel<c10::BFloat16>(c10::BFloat16*, c10::BFloat16 const*, c10::BFloat16 const*, float, int, int)",
        "fused_norm": "void vllm::fused_add_rms_norm_kernel<c10::BFloat16, 8>(c10::BFloat16*, c10::BFloat16*, c10::BFloat16 const*, float, int, int)",
        "rotary": "void vllm::rotary_embedding_kernel<c10::BFloat16, true>(long const*, c10::BFloat16*, c10::BFloat16*, c10::BFloat16 const*, int, long, long, long, int, int, int)",
        "kv_cache": f"void vllm::reshape_and_cache_flash_kernel<{_BF}, {_BF}, (vllm::Fp8KVCacheDataType)0>({_BF} const*, {_BF} const*, {_BF}*, {_BF}*, long const*, int, int, int, int, int, int, float const*, float const*)",
        "attn_decode": f"void vllm::paged_attention_v2_kernel<{_BF}, {_BF}, 128, 16, 128, (vllm::Fp8KVCacheDataType)0, false, 512>(float*, float*, {_BF}*, {_BF} const*, {_BF} const*, {_BF} const*, int, float, int const*, int const*, int, float const*, int, int, int, float const*, float const*, int, int, int)",
        "attn_reduce": f"void vllm::paged_attention_v2_reduce_kernel<{_BF}, 128, 128, 512>({_BF}*, float const*, float const*, {_BF} const*, int const*, int)",
        "attn_prefill": "void flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4, false, false, cutlass::bfloat16_t, Flash_kernel_traits<128, 128, 64, 4, cutlass::bfloat16_t> >, false, true, false, false, true, true, false, false>(Flash_fwd_params)",
        "act": "void vllm::act_and_mul_kernel<c10::BFloat16, &(c10::BFloat16 vllm::silu_kernel<c10::BFloat16>(c10::BFloat16 const&)), true>(c10::BFloat16*, c10::BFloat16 const*, int)",
        "sample": _TORCH_ARGMAX,
    },
    "sglang": {
        "rmsnorm": f"void flashinfer::norm::RMSNormKernel<8u, {_BF}>({_BF}*, {_BF}*, {_BF}*, unsigned int, unsigned int, unsigned int, float, float)",
        "fused_norm": f"void flashinfer::norm::FusedAddRMSNormKernel<8u, {_BF}>({_BF}*, {_BF}*, {_BF}*, unsigned int, unsigned int, unsigned int, float, float)",
        "rotary": f"void flashinfer::BatchQKApplyRotaryPosIdsCosSinCacheHeadParallelismKernel<false, 128u, 8u, 16u, {_BF}, long>({_BF}*, {_BF}*, {_BF}*, {_BF}*, float*, long*, unsigned int, unsigned int, unsigned int, unsigned int, unsigned long, unsigned long, unsigned long, unsigned long, unsigned long, unsigned long, unsigned long, unsigned long)",
        "kv_cache": "void (anonymous namespace)::store_kvcache<2048l, 4, false, long>((anonymous namespace)::StoreKVCacheParams)",
        "attn_decode": f"void flashinfer::BatchDecodeWithPagedKVCacheKernel<(flashinfer::PosEncodingMode)0, 2u, 4u, 8u, 16u, 1u, 8u, {_BF}, {_BF}, {_BF}, int, flashinfer::DefaultAttention<false, false, false, false>, flashinfer::BatchDecodeParams<{_BF}, {_BF}, {_BF}, int> >(flashinfer::BatchDecodeParams<{_BF}, {_BF}, {_BF}, int>)",
        "attn_prefill": f"void flashinfer::BatchPrefillWithRaggedKVCacheKernel<flashinfer::KernelTraits<(flashinfer::MaskMode)1, 128u, 1u, 4u, 8u, 8u, 4u, (flashinfer::PosEncodingMode)0, {_BF}, {_BF}, {_BF}, float, int, flashinfer::DefaultAttention<false, false, false, false> >, flashinfer::BatchPrefillRaggedParams<{_BF}, {_BF}, {_BF}, int> >(flashinfer::BatchPrefillRaggedParams<{_BF}, {_BF}, {_BF}, int>)",
        "act": f"void flashinfer::activation::act_and_mul_kernel<{_BF}, &(float silu<float>(float const&))>({_BF}*, {_BF} const*, int)",
        "sample": "void flashinfer::sampling::TopKTopPSamplingFromProbKernel<1024u, (cub::BlockScanAlgorithm)2, (cub::BlockReduceAlgorithm)2, 1u, false, float, int>(float*, int*, int*, float*, int*, float*, float, unsigned int, unsigned int, unsigned long, unsigned long)",
    },
    "trtllm": {
        "rmsnorm": f"void tensorrt_llm::kernels::generalRmsNorm<{_BF}, float, false>({_BF} const*, {_BF} const*, {_BF} const*, {_BF}*, float, int, int, float const*, float const*, float*, float*, signed char*, int*, bool)",
        "fused_norm": f"void tensorrt_llm::kernels::generalRmsNorm<{_BF}, float, false>({_BF} const*, {_BF} const*, {_BF} const*, {_BF}*, float, int, int, float const*, float const*, float*, float*, signed char*, int*, bool)",
        "rope_kv": f"void tensorrt_llm::kernels::applyBiasRopeUpdateKVCacheV2<{_BF}, {_BF}, 128, false, tensorrt_llm::kernels::KVBlockArray, true>(tensorrt_llm::kernels::QKVPreprocessingParams<{_BF}, tensorrt_llm::kernels::KVBlockArray>)",
        "attn_decode": "kernel_mha",
        "attn_prefill": "fmha_v2_flash_attention_bf16_64_128_S_qkv_128_causal_sm90_kernel_nl_tiled",
        "act": f"void tensorrt_llm::kernels::silu_and_mul_kernel<{_BF}>({_BF}*, {_BF} const*, int)",
        "sample": f"void tensorrt_llm::kernels::topKStage2Sampling<{_BF}, 128, 8>(int const*, {_BF}*, int**, int*, float*, float*, int*, int, int, float const*, float, float const*, int, int const*, bool const*, bool, int const*, bool)",
    },
}

VOCABS: dict[str, Vocabulary] = {
    "vllm": Vocabulary("vllm", False, 7, False, True, False, False),
    "sglang": Vocabulary("sglang", True, 20, False, False, False, True),
    "trtllm": Vocabulary("trtllm", False, 7, True, False, True, False),
}

HTOD_NAME = "Memcpy HtoD (Pinned -> Device)"
DTOH_NAME = "Memcpy DtoH (Device -> Pinned)"

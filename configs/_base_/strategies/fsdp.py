# PyTorch FSDP through mmengine's FlexibleRunner: parameters, gradients and optimiser state sharded
# across GPUs, each LLaMA decoder layer one FSDP unit, bf16 mixed precision.
runner_type = "FlexibleRunner"
strategy = dict(
    type="FSDPStrategy",
    model_wrapper=dict(
        auto_wrap_policy=dict(type="torch.distributed.fsdp.wrap.size_based_auto_wrap_policy",
                              min_num_params=int(1e7)),
        use_orig_params=True,  # LoRA: frozen and trainable parameters in one unit
    ),
    state_dict_cfg="full",
)
# Precision is the config's own, as without FSDP (configs/_base_/precision/: bf16 = AmpOptimWrapper).

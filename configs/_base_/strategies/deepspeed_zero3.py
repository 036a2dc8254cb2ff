# DeepSpeed ZeRO-3 (parameters sharded too) through mmengine's FlexibleRunner: for 13B or full
# fine-tuning on 24 GB GPUs. Same optimiser, precision and clipping as LISA's ZeRO-2 (spec §1.4).
_base_ = ["./deepspeed_zero2.py"]
strategy = dict(
    zero_optimization=dict(_delete_=True, stage=3, contiguous_gradients=True, overlap_comm=True,
                           reduce_bucket_size=5e8, stage3_prefetch_bucket_size=5e8,
                           stage3_param_persistence_threshold=1e6, stage3_gather_16bit_weights_on_model_save=True),
)

# DeepSpeed ZeRO-2 through mmengine's FlexibleRunner: LISA's official setting (spec seg_token_family.md
# §1.4: bf16, ZeRO stage 2 with contiguous gradients, overlap_comm and 5e8 buckets, clipping 1.0).
# Merge into a config with `tools/train.py CONFIG --strategy deepspeed_zero2 --launcher pytorch`, or
# inherit it. DeepSpeed needs CUDA to train (`pip install -e .[deepspeed]`); here it is only built.
runner_type = "FlexibleRunner"
strategy = dict(
    type="DeepSpeedStrategy",
    zero_optimization=dict(stage=2, contiguous_gradients=True, overlap_comm=True, reduce_scatter=True,
                           reduce_bucket_size=5e8, allgather_bucket_size=5e8),
    bf16=dict(enabled=True),
)
# DeepSpeed clips, accumulates and casts itself, so a config inheriting this preset writes
# optim_wrapper=dict(_delete_=True, type='DeepSpeedOptimWrapper', optimizer=...) and the strategy's
# gradient_clipping, gradient_accumulation_steps and train_micro_batch_size_per_gpu (see
# configs/lisa/*_ds-zero2.py); `tools/train.py --strategy` writes them from the config's optim_wrapper.
# The runner refuses an OptimWrapper / AmpOptimWrapper under DeepSpeed instead of translating it.

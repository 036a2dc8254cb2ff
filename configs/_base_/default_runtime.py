# Runtime shared by every reseg config (mmengine conventions). Everything a reseg run needs is written
# here, none of it is added by the runner: the work dir's config dump is the config that ran. The runner
# refuses a config that drops one of these (docs/getting_started.md, "The config is what runs").
# `precision` and the optim wrapper's type come from configs/_base_/precision/ through the schedule.
default_scope = "reseg"

default_hooks = dict(
    runtime_info=dict(type="RuntimeInfoHook"),
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=20, log_metric_by_epoch=False),
    param_scheduler=dict(type="ParamSchedulerHook"),
    # atomic writes; old checkpoints pruned only once the new one is complete (mmengine's CheckpointHook
    # deletes first and can leave a truncated file when killed)
    checkpoint=dict(type="SafeCheckpointHook", by_epoch=False, interval=500, max_keep_ckpts=2, save_last=True),
    sampler_seed=dict(type="DistSamplerSeedHook"),
)
# PlainCheckpointHook: checkpoints hold tensors and plain values only, so they load with
# torch.load(weights_only=True). StepSeedHook: torch reseeded per iteration, so a resumed run draws the
# same dropout masks as an uninterrupted one. A config that sets custom_hooks replaces this list: keep both.
custom_hooks = [dict(type="PlainCheckpointHook"), dict(type="StepSeedHook")]
# DDP (--launcher pytorch). find_unused_parameters: [SEG] heads decode with multimask_output=False, so SAM's
# IoU head and mask slots 1-3 never get a gradient (spec seg_token_family.md §1.2).
# device_ids=None: DDP takes the module's own device, a rank's GPU or the CPU (mmengine's default
# [LOCAL_RANK] fails for a CPU module).
model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False,
                         find_unused_parameters=True)
# dist_cfg.backend unset: mmengine's nccl on CUDA; reseg's CPU launcher joins torchrun's group with gloo.
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0), dist_cfg=dict())
log_processor = dict(by_epoch=False, window_size=20)
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)

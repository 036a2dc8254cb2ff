# Runtime shared by every reseg config (mmengine conventions).
default_scope = "reseg"
precision = "auto"  # bf16 autocast on CUDA, fp32 on CPU (reseg.engine.runner)

default_hooks = dict(
    runtime_info=dict(type="RuntimeInfoHook"),
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=20, log_metric_by_epoch=False),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="SafeCheckpointHook", by_epoch=False, interval=500, max_keep_ckpts=2, save_last=True),
    sampler_seed=dict(type="DistSamplerSeedHook"),
)
custom_hooks = [dict(type="PlainCheckpointHook")]
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork", opencv_num_threads=0), dist_cfg=dict())
log_processor = dict(by_epoch=False, window_size=20)
log_level = "INFO"
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)

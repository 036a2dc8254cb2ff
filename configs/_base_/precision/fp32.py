# fp32 training: mmengine's plain OptimWrapper, no autocast. What the tiny configs train with, on CPU
# and on a GPU alike. A schedule inherits one precision piece and adds its optimizer to `optim_wrapper`.
# The runner checks that `precision` and the optim wrapper agree; it never changes either
# (docs/getting_started.md, "The config is what runs").
precision = "fp32"
optim_wrapper = dict(type="OptimWrapper")

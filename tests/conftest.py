import jax

# The maths is checked in float64; tests that need float32 ask for it explicitly.
jax.config.update("jax_enable_x64", True)

import jax
import pytest

# The maths is checked in float64; tests that need float32 ask for it explicitly.
jax.config.update("jax_enable_x64", True)


@pytest.fixture
def stop_at_checkpoint(monkeypatch):
    """`stop(run, after=1)`: call `run()` as a Ctrl-C would stop it, right after its `after`-th
    checkpoint is written (the `KeyboardInterrupt` is asserted); checkpointing is restored after."""
    from rodflow import _io

    def stop(run, after=1):
        real_save = _io.save_checkpoint
        calls = {"n": 0}

        def save_then_stop(*args, **kwargs):
            real_save(*args, **kwargs)
            calls["n"] += 1
            if calls["n"] == after:
                raise KeyboardInterrupt

        monkeypatch.setattr(_io, "save_checkpoint", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            run()
        monkeypatch.setattr(_io, "save_checkpoint", real_save)

    return stop

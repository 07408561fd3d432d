"""What "the same numbers" means for a run cut into calls, per platform.

On a CPU a run cut into calls (progress bars, interruptible batches) computes the one program's
numbers bit for bit, and the tests say so. An accelerator compiles each call's program on its
own and may order a sum otherwise in each (on an H200 the cut runs were not bit-identical): there
the tests ask for the same numbers to 1e-10 of the quantity's scale, NaN where NaN."""

import jax
import numpy as np

ON_CPU = jax.default_backend() == "cpu"
OFF_CPU_RTOL = 1e-10


def assert_same_run(x, y, err_msg="", scale=None):
    """x equals y bit for bit on a CPU; elsewhere to OFF_CPU_RTOL of `scale` (default: y's largest
    finite magnitude), with NaN and inf in the same places. Integer and boolean arrays: equal."""
    x, y = np.asarray(x), np.asarray(y)
    if ON_CPU or x.dtype.kind != "f":
        np.testing.assert_array_equal(x, y, err_msg=err_msg)
        return
    if scale is None:
        finite = np.abs(y[np.isfinite(y)])
        scale = finite.max() if finite.size else 0.0
    np.testing.assert_array_equal(np.isfinite(x), np.isfinite(y), err_msg=err_msg)
    np.testing.assert_allclose(x, y, rtol=0, atol=OFF_CPU_RTOL * scale, equal_nan=True, err_msg=err_msg)

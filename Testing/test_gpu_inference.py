"""GPU inference settings whose logic runs on the CPU: sizes from free memory, the
out-of-memory retry, and that the CPU context keeps full precision."""

import pytest
import torch

from ClinicalFMambaLib.fusion import gpu

GIB = 1 << 30


def test_whole_volume_when_it_fits_else_a_cube_that_does():
    shape = (155, 240, 240)
    assert gpu.patch_for_memory(shape, free_bytes=80 * GIB) == shape
    patch = gpu.patch_for_memory(shape, free_bytes=2 * GIB)
    side = patch[0]
    assert patch == (side, side, side) and side % 16 == 0
    budget = 2 * GIB * gpu.MEMORY_SHARE / gpu.BYTES_PER_VOXEL
    assert side ** 3 <= budget < (side + 16) ** 3       # the largest multiple of 16 that fits
    assert gpu.patch_for_memory(shape, free_bytes=1 << 20) == (gpu.SMALLEST_PATCH,) * 3
    assert gpu.patch_for_memory((20, 300, 300), free_bytes=1 * GIB)[0] == 20  # thin volume


def test_slice_batch_grows_with_memory_within_bounds():
    assert gpu.batch_for_memory((256, 256), free_bytes=0, default=8) == 8
    assert gpu.batch_for_memory((256, 256), free_bytes=1000 * GIB, default=8) == 256
    middle = gpu.batch_for_memory((256, 256), free_bytes=4 * GIB, default=8)
    assert middle == int(4 * GIB * gpu.MEMORY_SHARE / (gpu.BYTES_PER_PIXEL * 256 * 256))


def test_out_of_memory_retries_with_half_the_size_and_says_so():
    tried = []

    def run(size):
        tried.append(size)
        if size > 40:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9 GiB")
        return size

    with pytest.warns(RuntimeWarning) as caught:
        assert gpu.retry_smaller_on_oom(run, 160, 32, "patches") == 40
    assert tried == [160, 80, 40]
    assert [str(w.message) for w in caught] == [
        "CUDA ran out of memory with patches of 160; retrying with 80",
        "CUDA ran out of memory with patches of 80; retrying with 40"]


def test_out_of_memory_at_the_smallest_size_is_one_clear_error():
    def run(size):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match="device cpu"):
        gpu.retry_smaller_on_oom(run, 64, 32, "patches")


def test_other_errors_are_not_retried():
    def run(size):
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        gpu.retry_smaller_on_oom(run, 64, 32, "patches")


def test_cpu_context_is_inference_mode_in_float32():
    layer = torch.nn.Linear(4, 4)
    with gpu.inference_context(torch.device("cpu")):
        out = layer(torch.randn(2, 4))
        assert torch.is_inference_mode_enabled()
    assert out.dtype == torch.float32 and not out.requires_grad
    assert gpu.free_memory(torch.device("cpu")) is None


def test_run_network_splits_a_batch_that_does_not_fit():
    class FitsTwo(torch.nn.Module):
        def forward(self, a, b):
            if len(a) > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory")
            return (a + b).half()

    a, b = torch.rand(5, 1, 4, 4), torch.rand(5, 1, 4, 4)
    with pytest.warns(RuntimeWarning, match="batches of 5; retrying with 2"):
        out = gpu.run_network(FitsTwo(), a, b)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, (a + b).half().float())

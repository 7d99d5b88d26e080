import pytest
import torch


@pytest.fixture(autouse=True)
def _restore_threads():
    """Training runs here use --threads 1 (fastest on a shared 2-core machine); give the
    rest of the session its thread count back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


# A tiny, fast recipe: 16x16 digits through a two-block simple_cnn.
TINY = ["--data", "digits", "--image-size", "16", "--arch", "simple_cnn", "--arch-arg", "widths=[8,16]",
        "--limit", "160", "--batch-size", "32", "--threads", "1", "--no-progress"]

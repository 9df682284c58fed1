"""The data sets and the memory warm-up shared by the benchmark scripts (tools/compare-peers,
tools/measure-contention): every script measures the same files, prepared the same way."""
import os

# name: (files, bytes per file, label)
DATASETS = {
    "large": (1, 2 << 30, "1 x 2 GiB"),
    "medium": (1000, 1 << 20, "1,000 x 1 MiB"),
    "small": (20000, 4096, "20,000 x 4 KiB"),
}


def generate(name, root):
    files, size, _ = DATASETS[name]
    top = os.path.join(root, name)
    os.makedirs(top)
    state = os.urandom(1 << 20)
    for i in range(files):
        d = os.path.join(top, f"d{i // 1000}") if files > 1000 else top
        if files > 1000 and i % 1000 == 0:
            os.makedirs(d)
        with open(os.path.join(d, f"f{i}"), "wb") as f:
            left = size
            while left:
                n = min(left, len(state))
                f.write(state[:n])
                left -= n
            state = state[1:] + state[:1]  # files differ from each other
    return top


def warm_up(gib):
    # This VM hands freed memory back to its host a moment after it is freed, and the first
    # touch of such memory is several times slower: runs turn bimodal. Touching a few GiB and
    # freeing them right before each timed run gives every tool the same warm memory.
    blocks = [bytearray(b"\x01") * (1 << 30) for _ in range(int(gib))]
    del blocks

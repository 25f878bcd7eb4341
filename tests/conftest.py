"""Shared test setup: quiet TensorFlow; `write_slow_builder` for the tests that kill or race real builds."""
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


_SLOW_BUILDER = '''
import time
import numpy as np
from tfrecords_builder import Builder, Item


class Slow(Builder):
    NAME = "slow"
    ITEMS_PER_SHARD = 2

    def list_items(self):
        for index in range({items}):
            yield Item(split="train", key=f"img{{index:03d}}", data={{"value": index}})

    def examples(self, item):
        time.sleep({delay})
        crop = np.full((16, 16, 3), item.data["value"] * 6 % 250, np.uint8)
        yield self.sample(item, crop, expr=item.data["value"] % 7)
'''


def write_slow_builder(directory, module: str, items: int, delay: float) -> Path:
    """Write `<directory>/<module>.py`: a builder `Slow` of `items` tiny images taking `delay` s each, for a
    subprocess build to be killed or raced while it runs."""
    path = Path(directory) / f"{module}.py"
    path.write_text(_SLOW_BUILDER.format(items=items, delay=delay))
    return path

"""The pixels every data set stores and a packed network reads: one
unsigned byte each, 0 .. 255. A network trains on ``p * scale / 255 +
shift`` (:data:`qnn.datasets.INPUT_RANGES`); a packed network reads the
bytes themselves, as bit planes."""

PIXEL_BITS = 8
PIXEL_MAX = 2 ** PIXEL_BITS - 1

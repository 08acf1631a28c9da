"""Reading MURA: the image index (`read_mura`), the patient-grouped split and class weights.

Kept light on purpose (pandas only, no torch), so that `python -m mura_lib describe` and the
EDA notebook start fast. The image pipeline (images, cache, augmentation, batches) lives in
sibling modules that are imported by name.
"""

from mura_lib.data.mura import MuraIndex, read_mura, scan_mura
from mura_lib.data.splits import split_by_patient

__all__ = ["MuraIndex", "read_mura", "scan_mura", "split_by_patient"]

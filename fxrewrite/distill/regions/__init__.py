"""Regions: what of the teacher students replace, cut where students can begin and end
(`carving`), from the teacher's blocks (`blocks`), what students can read (`reach`), layouts of
rank-4 tensors (`layouts`), copies of what regions would share (`sharing`) and cycle-free groups
(`partition`)."""

from fxrewrite.distill.regions.carving import REGION_PREFIX, Region, carve, find_regions

__all__ = ["REGION_PREFIX", "Region", "carve", "find_regions"]

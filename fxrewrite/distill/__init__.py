"""Arch-Distillation: a student block of legal ops for every region, trained without labels.

The package by job: `regions/` carves the teacher into what students replace; `students/` holds the
student kinds, one per file behind one interface, which `synthesis.py` chooses between and
`sizing.py` sizes by cost; `training/` runs the phases (loop, schedules, monitor, losses, augment,
checkpoints, processes, recording); `distiller.py` is the whole run on top, `growth.py` one step of it.

1. The teacher is carved into regions (regions/) and run once per batch; every region's
   inputs and outputs are cached (training/recording.py).
2. Blockwise phase, one of two schedules:
   - parallel: every student at once, on the teacher's own region inputs, against the teacher's
     region outputs;
   - progressive (Arch-Net): period k swaps the first k+1 regions (graph order) for their
     students and matches their outputs with weights 0.8^(k-i), the newest at 1.
   The loss is MSE under teacher attention, through a residual feature adapter (training/losses.py);
   every phase runs in the one training loop (training/loop.py) with checkpoints and, with
   a patience or a time budget, stops on a held-out plateau or its deadline and keeps its best
   epoch (training/monitor.py).
3. The students are stitched in, batch norms folded by the fold-batch-norm pass, and (with a
   quantization scheme) every conv and linear layer gets LSQ or DoReFa fake quantization,
   calibrated on the data. The whole network is then fine-tuned end to end on a cosine loss and
   normalized MSE on the final output, plus 0.5 x the per-block MSE.
4. The result is traced flat (quantization in its graph form, fxrewrite.quant), so it is made of
   vocabulary ops only; the training-only adapters and attention are gone.
"""

from fxrewrite.distill.training.checkpoints import (CHECKPOINT_NAME, Progress, ProgressBars, ProgressCallback,
                                                   remove_checkpoint)
from fxrewrite.distill.distiller import Distilled, StudentResult, distill
from fxrewrite.distill.options import CALIBRATED_FIELDS, TrainingOptions
from fxrewrite.distill.training.monitor import Point
from fxrewrite.distill.regions.carving import REGION_PREFIX, Region, carve, find_regions
from fxrewrite.distill.training.schedules import SCHEDULES, Schedule
from fxrewrite.distill.sizing import DEFAULT_STUDENT_BUDGET
from fxrewrite.distill.students.base import seed_from_teacher
from fxrewrite.distill.synthesis import synthesize

__all__ = ["CALIBRATED_FIELDS", "CHECKPOINT_NAME", "DEFAULT_STUDENT_BUDGET", "REGION_PREFIX", "SCHEDULES", "Distilled",
           "Point", "Progress", "ProgressBars", "ProgressCallback", "Region", "Schedule", "StudentResult",
           "TrainingOptions", "carve", "distill", "find_regions", "remove_checkpoint", "seed_from_teacher",
           "synthesize"]

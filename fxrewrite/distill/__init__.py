"""Arch-Distillation: a student block of legal ops for every region, trained without labels.

1. The teacher is carved into regions (regions.py) and run once per batch; every region's
   inputs and outputs are cached (recording.py).
2. Blockwise phase, one of two schedules:
   - parallel: every student at once, on the teacher's own region inputs, against the teacher's
     region outputs;
   - progressive (Arch-Net): period k swaps the first k+1 regions (graph order) for their
     students and matches their outputs with weights 0.8^(k-i), the newest at 1.
   The loss is MSE under teacher attention, through a residual feature adapter (blockwise_loss.py);
   every phase runs in the one training loop (loop.py) with checkpoints (checkpoints.py) and, with
   a patience or a time budget, stops on a held-out plateau or its deadline and keeps its best
   epoch (monitor.py).
3. The students are stitched in, batch norms folded by the fold-batch-norm pass, and (with a
   quantization scheme) every conv and linear layer gets LSQ or DoReFa fake quantization,
   calibrated on the data. The whole network is then fine-tuned end to end on a cosine loss and
   normalized MSE on the final output, plus 0.5 x the per-block MSE.
4. The result is traced flat (quantization in its graph form, fxrewrite.quant), so it is made of
   vocabulary ops only; the training-only adapters and attention are gone.
"""

from fxrewrite.distill.checkpoints import (CHECKPOINT_NAME, Progress, ProgressBars, ProgressCallback,
                                          remove_checkpoint)
from fxrewrite.distill.distiller import DistillConfig, Distilled, StudentResult, distill
from fxrewrite.distill.monitor import Point
from fxrewrite.distill.regions import REGION_PREFIX, Region, carve, find_regions
from fxrewrite.distill.schedules import SCHEDULES, Schedule
from fxrewrite.distill.sizing import DEFAULT_STUDENT_BUDGET
from fxrewrite.distill.seeding import seed_from_teacher
from fxrewrite.distill.students import synthesize

__all__ = ["CHECKPOINT_NAME", "DEFAULT_STUDENT_BUDGET", "REGION_PREFIX", "SCHEDULES", "DistillConfig", "Distilled",
           "Point", "Progress", "ProgressBars", "ProgressCallback", "Region", "Schedule", "StudentResult", "carve", "distill", "find_regions",
           "remove_checkpoint", "seed_from_teacher", "synthesize"]

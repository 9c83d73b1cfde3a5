"""Training students: one loop (`loop`) every phase (`schedules`) runs, scored on held-out data
(`monitor`), on blockwise losses (`losses`) and label-free augmentation (`augment`), checkpointed
(`checkpoints`), over several processes (`processes`), on what the teacher's regions record
(`recording`)."""

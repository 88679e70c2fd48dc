"""The GPU check of the embedder (issue 20): check.py orchestrates (prepare, stage, run), bundle.py
carries the wheels, model and references to the GPU machine in parts, phases.py measures, one
process per phase. scripts/gpu_check.py and scripts/gpu_check.sh are its command lines."""

#!/usr/bin/env bash
# A cohort as a plain SLURM job array, without a Dask scheduler: each array task runs its
# share (--part K/N) on a local Dask cluster sized to its own allocation (cores, memory).
#
#   sbatch --array=1-10 docs/cohort_slurm_array.sh BIDS_DIR OUT_DIR [cohort options ...]
#   clinicalfmamba cohort BIDS_DIR OUT_DIR group        # when the array is done
#
# Tasks that share OUT_DIR never write the same subject-session (one lock each); rerunning the
# array does only what is missing or failed. The array's IDs may start anywhere (1-10, 0-9).
#SBATCH --job-name=clinicalfmamba-cohort
#SBATCH --cpus-per-task=4
#SBATCH --mem=16G
#SBATCH --time=04:00:00
#SBATCH --output=clinicalfmamba-cohort-%A_%a.out
set -euo pipefail
bids_dir=$1 out_dir=$2
shift 2
share=$(( SLURM_ARRAY_TASK_ID - ${SLURM_ARRAY_TASK_MIN:-1} + 1 ))
exec clinicalfmamba cohort "$bids_dir" "$out_dir" participant \
    --part "$share/${SLURM_ARRAY_TASK_COUNT:-1}" "$@"

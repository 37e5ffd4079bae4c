# Sourced by the SLURM recipes: run a pbt command so that SLURM's warning signal stops it cleanly
# and the job is requeued to resume where it stopped.
#
# The scripts ask for `#SBATCH --signal=B:TERM@300` (SIGTERM to this batch shell 5 minutes before
# the time limit) and `#SBATCH --requeue`. A shell does not pass signals on to the command it waits
# for, so `resumable pbt ...` runs pbt in the background and forwards SIGTERM to it; pbt finishes
# or drops the unit in flight, leaves its files complete and its manifest `interrupted` (exit 143),
# and the job goes back to the queue: the same command then resumes (docs/method.md §2.11).
resumable() {
    "$@" &
    local pid=$!
    trap 'kill -TERM "$pid" 2>/dev/null; wait "$pid"; [ -n "${SLURM_JOB_ID:-}" ] && scontrol requeue "$SLURM_JOB_ID"; exit 143' TERM
    wait "$pid"
    local status=$?
    trap - TERM
    return $status
}

"""Running the system: the supervisor (`run_cortex`), housekeeping, and liveness/readiness."""

"""Reference trainers: the per-question one-step protocol and the TRL-based NTHR trainer."""

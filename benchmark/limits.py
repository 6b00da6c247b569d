"""Bounds on what a request may ask for, so that a valid but absurd one is refused before any
work instead of hanging or exhausting memory (README, "When a run is interrupted")."""

MAX_SEED = 2 ** 63 - 1  # torch.manual_seed's limit; numpy takes any non-negative integer
MAX_RESAMPLES = 100_000  # far past where the bootstrap's percentiles stop moving
# 10^6 episodes take seconds to draw; 2*10^7 image ids are ~0.5 GB of int64 arrays.
MAX_EPISODES = 1_000_000
MAX_IMAGE_IDS = 20_000_000

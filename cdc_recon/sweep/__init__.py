"""The window sweeper: finds the changes that never arrived and replays them."""

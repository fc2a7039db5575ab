"""Developer tooling (not shipped in the .mbp): real Synapse and maubot for the e2e suite and the demo."""

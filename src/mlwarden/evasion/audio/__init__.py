"""Audio evasion: waveform models, the SNR budget, 1-D search and universal perturbations."""

"""Networks of MA2MI: ResNet18 trunks, MIACNet, DiT and the frozen VAE wrapper."""

"""Model backends for ASD generation: one backend per file behind `base.Backend`, chosen by `factory`."""

"""Classical registration building blocks shared by the baselines: descriptors, window matching, fields."""

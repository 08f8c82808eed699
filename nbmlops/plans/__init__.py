"""The deployment plan: the seed's seven sections, from the registry's and the artifact's facts."""

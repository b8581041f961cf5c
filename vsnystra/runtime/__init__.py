"""Runtime shared by the VapourSynth filters and the CLI: devices, tiling, chunking, caches."""

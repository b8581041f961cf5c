"""The vsnystra command line (``vsnystra …`` or ``python -m vsnystra …``).

    vsnystra weights list [--urls]                 # official checkpoints, cache state (stdout)
    vsnystra weights download rvrt-denoise-davis   # resumable, verified; patterns: 'swinir-colordn-*'
    vsnystra weights import uformer-b-sidd ~/Downloads/Uformer_B.pth
    vsnystra restore in/*.mkv -o out/ --model rvrt-denoise-davis --sigma 10
    vsnystra restore tapes/ -o masters/ --codec ffv1 --model swinir-classical-x2 --tile 256
    vsnystra restore script.vpy -a input=tape.mkv -o out/      # encode a script's output 0

Modules: ``main`` (arguments, exit codes), ``batch`` (temporary outputs, skip, summary), ``pipeline``
(PyAV / .vpy decode, stream copy, encode), ``media`` (colour conversion, encoder set-up), ``model`` (loading
through the shared model cache, frame streams for restore_video / restore_image), ``progress`` (stderr bar).
"""

"""The vsnystra command line (``vsnystra …`` or ``python -m vsnystra …``).

    vsnystra weights list [--urls]                 # official checkpoints, cache state (stdout)
    vsnystra weights download rvrt-denoise-davis   # resumable, verified; patterns: 'swinir-colordn-*'
    vsnystra weights import uformer-b-sidd ~/Downloads/Uformer_B.pth
    vsnystra restore in/*.mkv -o out/ --model rvrt-denoise-davis --sigma 10
    vsnystra restore tapes/ -o masters/ --codec ffv1 --model swinir-classical-x2 --tile 256
    vsnystra restore script.vpy -a input=tape.mkv -o out/      # encode a script's output 0
    vsnystra restore tapes/ -o /shared/masters/ --ray auto     # on a Ray cluster (pip install 'vsnystra[ray]')

Modules: ``main`` (arguments, exit codes), ``batch`` (temporary outputs, skip, summary; .vpy inputs), ``pipeline``
(PyAV / .vpy decode, stream copy, encode), ``media`` (colour conversion, encoder set-up), ``model`` (loading
through the shared model cache, frame streams for restore_video / restore_image), ``progress`` (stderr bar).
Video files go through the segmented restore: ``segments`` (planner), ``scan`` (planning pass), ``worker`` (one
segment), ``assemble`` (lossless join), ``filework`` / ``distribute`` (the driver, ``background`` threads),
``local_executor`` (in process) and ``ray_executor`` (``--ray``).
"""

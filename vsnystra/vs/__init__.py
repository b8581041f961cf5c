"""VapourSynth side: filters, frame <-> tensor conversion, the native shim's Python half."""

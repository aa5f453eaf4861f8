"""The one exception type users see: a message naming the file/line/layer and what to do. The CLI prints it and
exits 1 instead of a traceback."""


class FlowError(RuntimeError):
    pass

"""netscope server: gRPC service, model registry and the domain code behind each RPC."""

import os as _os

# OpenCV reads its decoded-pixel limit once, when cv2 is first imported: set it
# here, before any server module imports cv2, as a second line behind the
# header check in imaging.decode (2**28 pixels, 768 MB of BGR; an operator's
# own OPENCV_IO_MAX_IMAGE_PIXELS wins).
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 28))

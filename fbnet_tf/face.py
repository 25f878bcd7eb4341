"""Face detection (box + 5 landmarks) and similarity-transform alignment to the canonical 5-point template.

Builders and `fbnet_tf.predict` share this module so training and inference crops are identical.
"""
import numpy as np

# Canonical 5-point template for a 112x112 crop (left eye, right eye, nose tip, left and right mouth corner,
# image coordinates; "left" = the subject's right eye, on the image's left). The widely used ArcFace template.
TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)

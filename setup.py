"""simclr_tf: SimCLR (v1 and v2) for TensorFlow 2 / Keras 2."""

from setuptools import find_packages, setup

setup(
    name="simclr_tf",
    version="0.1.0",
    description="SimCLR (v1/v2) contrastive learning for TensorFlow 2 and Keras 2 (tf_keras).",
    packages=find_packages(include=["simclr_tf", "simclr_tf.*"]),
    py_modules=["simclr_tf_keras3"],  # an export as a Keras 3 layer, apart from the package
    python_requires=">=3.11,<3.14",
    classifiers=[
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
    ],
    install_requires=[
        "tensorflow==2.20.*",
        "tf-keras==2.20.*",
        "tf-models-official==2.20.*",
        "tensorflow-datasets",
        "tensorflow-hub",
        "absl-py",
        "numpy",
        "matplotlib",  # simclr-visualize (tf-models-official needs it too)
        "scipy",  # simclr-transfer's L-BFGS (tf-models-official needs it too)
    ],
    extras_require={
        "test": ["pytest", "pytest-xdist", "nbclient", "nbformat", "ipykernel", "pillow",
                 "matplotlib", "scikit-learn"],
    },
    entry_points={
        "console_scripts": [
            "simclr-pretrain=simclr_tf.cli.pretrain:run",
            "simclr-finetune=simclr_tf.cli.finetune:run",
            "simclr-eval=simclr_tf.cli.evaluate:run",
            "simclr-export=simclr_tf.cli.export:run",
            "simclr-bench=simclr_tf.cli.bench:run",
            "simclr-convert=simclr_tf.cli.convert:run",
            "simclr-visualize=simclr_tf.cli.visualize:run",
            "simclr-distill=simclr_tf.cli.distill:run",
            "simclr-transfer=simclr_tf.cli.transfer:run",
            "simclr-ablate=simclr_tf.cli.ablate:run",
        ]
    },
)

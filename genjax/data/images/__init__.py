"""Image datasets through tensorflow-datasets (array_record, tfds.data_source) and grain.

- local_builder: base of the tfds builders here (nothing downloaded, not registered)
- digits_builder: scikit-learn's 8x8 digits as a tfds dataset
- folder_builder: a directory of class subdirectories of images as a tfds dataset
- sources: open one split of a prepared dataset for random access (ConfigError if missing)
- transforms: scaling to [-1, 1], centre crop and resize, random flips
- stream: ImageStream, batch `step` a pure function of (seed, step), per-process shares
- datasets: the factory's DATASETS entries (digits, tfds, image_folder) and their config fields
"""

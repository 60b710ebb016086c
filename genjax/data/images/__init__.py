"""Image datasets through tensorflow-datasets (array_record, tfds.data_source) and grain.

- local_builder: base of the tfds builders here (nothing downloaded, not registered)
- digits_builder: scikit-learn's 8x8 digits as a tfds dataset
- folder_builder: a directory of class subdirectories of images as a tfds dataset
"""

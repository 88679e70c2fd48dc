from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ItemError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class Preprocessing(_message.Message):
    __slots__ = ("color_order", "mean", "std", "resize_shorter", "crop_size", "interpolation", "input_layout", "resize_mode")
    COLOR_ORDER_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    RESIZE_SHORTER_FIELD_NUMBER: _ClassVar[int]
    CROP_SIZE_FIELD_NUMBER: _ClassVar[int]
    INTERPOLATION_FIELD_NUMBER: _ClassVar[int]
    INPUT_LAYOUT_FIELD_NUMBER: _ClassVar[int]
    RESIZE_MODE_FIELD_NUMBER: _ClassVar[int]
    color_order: str
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    resize_shorter: int
    crop_size: int
    interpolation: str
    input_layout: str
    resize_mode: str
    def __init__(self, color_order: _Optional[str] = ..., mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ..., resize_shorter: _Optional[int] = ..., crop_size: _Optional[int] = ..., interpolation: _Optional[str] = ..., input_layout: _Optional[str] = ..., resize_mode: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "dim", "execution_provider", "providers", "precision", "preprocessing", "max_batch_size", "max_images_per_request", "max_image_pixels", "modality", "pooling", "target_space", "max_request_bytes", "visual_dims")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGES_PER_REQUEST_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    POOLING_FIELD_NUMBER: _ClassVar[int]
    TARGET_SPACE_FIELD_NUMBER: _ClassVar[int]
    MAX_REQUEST_BYTES_FIELD_NUMBER: _ClassVar[int]
    VISUAL_DIMS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    dim: int
    execution_provider: str
    providers: _containers.RepeatedScalarFieldContainer[str]
    precision: str
    preprocessing: Preprocessing
    max_batch_size: int
    max_images_per_request: int
    max_image_pixels: int
    modality: str
    pooling: str
    target_space: str
    max_request_bytes: int
    visual_dims: int
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., dim: _Optional[int] = ..., execution_provider: _Optional[str] = ..., providers: _Optional[_Iterable[str]] = ..., precision: _Optional[str] = ..., preprocessing: _Optional[_Union[Preprocessing, _Mapping]] = ..., max_batch_size: _Optional[int] = ..., max_images_per_request: _Optional[int] = ..., max_image_pixels: _Optional[int] = ..., modality: _Optional[str] = ..., pooling: _Optional[str] = ..., target_space: _Optional[str] = ..., max_request_bytes: _Optional[int] = ..., visual_dims: _Optional[int] = ...) -> None: ...

"""Every ltjax exception type, in one place.

Errors that are the user's to fix (a missing file, a missing package, a config mistake) derive from
:class:`UserError`: the command lines print their message and exit with status 2 instead of a traceback
(see :func:`ltjax.config.exit_on_config_error`).  The modules that raise them re-export their names
(e.g. ``ltjax.data.voc_coco.DatasetFilesError``), so either import path works.
"""

DATA_DIR_ENV = "LTJAX_DATA_DIR"  # where dataset roots are looked up when data.root is empty


class UserError(Exception):
    """Mixin for exceptions whose message already says what is wrong and how to fix it."""


# ---- configs ------------------------------------------------------------------------------------


class ConfigError(ValueError, UserError):
    """A mistake in a config file, a command-line flag or an override; the message says how to fix it."""


# ---- data ---------------------------------------------------------------------------------------


class DatasetFilesError(FileNotFoundError, UserError):
    """A file or folder a dataset build needs is missing; the message says what and where."""


class AnnotationError(ValueError, UserError):
    """A label table, split list, sheet or split setting is malformed; the message names the file and row."""


class ManifestError(ConfigError):
    """A mistake in a manifest's content or in the custom dataset's fields; the message says where and how to fix it."""


class TextDataError(ValueError, UserError):
    """A text setting or text file the user must fix; the message says what and where (the CLIs print
    it without a traceback)."""


class WordPieceError(ValueError):
    """A tokenizer.json this tokenizer cannot reproduce (not a BERT WordPiece tokenizer)."""


class ImageDecodeError(ValueError, UserError):
    """An image that does not decode during training or evaluation; the message names the example."""


class MissingDependencyError(ImportError, UserError):
    """tensorflow-datasets (or array_record) is not installed; the message says how to get it."""


class MissingPackageError(ImportError, UserError):
    """Reading an .xlsx sheet needs openpyxl; the message says how to get it (or to use a CSV export)."""


class CacheDirError(OSError, UserError):
    """The ltjax cache (``$LTJAX_CACHE_DIR``, else ``~/.cache/ltjax``) cannot be written; the message names it."""


class AssetUnavailableError(RuntimeError):
    """An asset could not be obtained; the message says how to provide it by hand."""


# ---- models -------------------------------------------------------------------------------------


class TextModelError(ValueError, UserError):
    """A text model used on inputs it cannot take (no vocabulary, not token ids)."""


class MiniLMError(ValueError):
    """Inputs or weights the MiniLM encoder cannot take."""


class PretrainedEmbeddingError(ValueError, UserError):
    """A ``model.pretrained_embeddings`` setting that cannot work (message says why)."""


# ---- training -----------------------------------------------------------------------------------


class CheckpointError(RuntimeError, UserError):
    """No usable checkpoint where one is needed (damaged, missing, or from another run); the message names
    the step, what is wrong with it, where it was moved, and the intact steps."""


class WorkdirError(RuntimeError, UserError):
    """A workdir that cannot hold this run: a file, not writable, or in use by another training process
    (the message names its PID and host)."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during training; the message says which checkpoint the same command resumes from."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the step and the last good checkpoint."""


class SnapshotError(ValueError, UserError):
    """A run's dataset snapshot (``ltjax.data.snapshot``) was asked for examples, or its files disagree."""

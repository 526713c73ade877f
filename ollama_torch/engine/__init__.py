"""The generation engine: which models are resident (``scheduler``), one worker thread per loaded model
(``worker``) running continuous batching over a Transformers model. Importing this package does not
import torch; the modules that need it do."""

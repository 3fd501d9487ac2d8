"""longseq.apps: domain applications (genomics, vision, audio, time series), one subpackage each."""

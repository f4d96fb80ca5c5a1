"""The run's description, shared by every wing: the settings (``config.Config``, one field
per flag), the accepted values of choice flags (``choices``), the endpoint names of the
models and exports (``endpoints``) and the step plan (epochs to steps, ``step_plan``).

Imports nothing else of the package, and no TensorFlow."""

"""An example third-party splice plugin: the squared-ReLU MLP (``type: "relu2"``)."""

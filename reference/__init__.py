"""The equations: plain references that share no code with torch_elmo, for the tests to judge it by.

    bilm_tf   bilm-tf's biLM written straight from its equations in numpy, float64, one token at
              a time; pinned to the original implementation by its fixtures
    kim2016   Kim et al. (2016)'s LSTM-Char-Small recipe in PyTorch's own modules: the model our
              LanguageModel must compute (loss and gradients), and a runnable training loop
"""

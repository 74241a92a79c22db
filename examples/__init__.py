"""Task models on ELMo as a user would write them: a sequence tagger and a sentence classifier,
trained with a plain PyTorch loop.

    python -m examples.tag train --train train.tsv --dev dev.tsv --save tagger.pt
    python -m examples.tag evaluate tagger.pt test.tsv
    python -m examples.classify train --train train.tsv --dev dev.tsv --save classifier.pt
    python -m examples.classify evaluate classifier.pt test.tsv

data.py reads the files, metrics.py scores (accuracy, BIO span F1), models.py holds the task
models, loop.py trains, evaluates, saves and reloads them; tag.py and classify.py are the commands.
"""

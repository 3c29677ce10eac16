"""The two-player game, one module per move, in the order an iteration plays them.

    prompts.py    the generator's prompt templates (what it is asked to write, from which seed)
    generator.py  stage `generate`: the generator LLM writes samples from seed rows
    curation.py   stage `curate`: only FAITHFUL samples survive (fidelity, language, duplicates);
                  the GAME SET is frozen from them at iteration 1
    game.py       stage `score`: the previous classifier plays the fresh samples (its training loss)
    pairs.py      stage `build_pairs`: honest DPO pairs (faithful and missed beats caught or drifted)
    dpo.py        stage `train_generator`: DPO (TRL + PEFT) makes the generator a harder opponent
    stoprule.py   when the game has converged and the loop stops
    turns.py      stage `train_classifier`: the classifier's move (carried over once the game stopped)

The classifier side of the game is duelguard.classifier; the stages' wiring is duelguard.pipeline.spec.
"""

"""The features floor: what merging and realignment both need to read an encoder.

Sites (which block outputs a head reads), one encoder pass returning them, seeded index samplers over
unlabelled inputs, the inputs container, the content-keyed feature cache and the output-distillation
loss. Nothing here knows about merge methods, realigners or jobs; both ``merging`` and ``realign``
import it, never the reverse.
"""

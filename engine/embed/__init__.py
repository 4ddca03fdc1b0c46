"""Embedding networks, triplet training and latent interventions (paper 2: ALI, PALI, PLI).

- :mod:`.network`: backbones (DenseNet-121, ResNet-18, a small CNN) with a 256-d head.
- :mod:`.triplet`, :mod:`.augment`: triplet margin loss with mining; crop/rotation views.
- :mod:`.interventions`: class-wise affine transforms (contract, rotate, shift, ortho-shift),
  the criterion Ω, composition over iterations, the intervention loss and class weights.
- :mod:`.training`: k-fold training with TML, ALI (n-D) or PALI (2-D through
  :mod:`.ptsne`, our parametric t-SNE), RBF-SVM (:mod:`.svm`) on region folds
  (:mod:`.folds`), early stopping on validation macro-F1.
- :mod:`.pli`: manual projective latent interventions (edits in the 2-D map -> targets).
- :mod:`.projection`: the openTSNE map shown beside the gallery.
- :mod:`.dryrun`: intervention strength on a fixed embedding (paper 2, Fig. 4, Table I).
- :mod:`.store`: embedding models, embeddings and projections in the project file.

Submodules are imported directly (``from hemalens.engine.embed.interventions import ...``)
so that using one does not load torch or openTSNE for the others.
"""

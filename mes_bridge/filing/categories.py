"""The document categories of Mon espace santé (API code and the label the patient sees)."""

from __future__ import annotations

import enum


class Category(enum.StrEnum):
    """MES dossier categories; the value is the API code, :attr:`label` the French label."""

    SYNTHESE = "SYNTHESE"
    ORD_SOIN = "ORD_SOIN"
    RADIO_SC = "RADIO_SC"
    BIOLOGIE = "BIOLOGIE"
    CPT_REND = "CPT_REND"
    DEPISTAG = "DEPISTAG"
    CERT_MED = "CERT_MED"
    DOC_ADM = "DOC_ADM"
    SYNTH_PML = "SYNTH_PML"
    DIR_ANT = "DIR_ANT"
    QUEST_SANTE = "QUEST_SANTE"
    AUTR_DOC = "AUTR_DOC"

    @property
    def label(self) -> str:
        return LABELS[self]


LABELS: dict[Category, str] = {
    Category.SYNTHESE: "Ma santé en résumé",
    Category.ORD_SOIN: "Ordonnances et soins",
    Category.RADIO_SC: "Radio, écho, scanner, IRM",
    Category.BIOLOGIE: "Résultats de biologie",
    Category.CPT_REND: "Comptes rendus",
    Category.DEPISTAG: "Prévention et dépistages",
    Category.CERT_MED: "Certificats médicaux",
    Category.DOC_ADM: "Pièces administratives",
    Category.SYNTH_PML: "Synthèse médicale",
    Category.DIR_ANT: "Directives anticipées",
    Category.QUEST_SANTE: "Questionnaire santé",
    Category.AUTR_DOC: "Autres documents",
}

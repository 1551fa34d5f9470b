from django import forms

from catalog.images import ImageError, image_prepare


class ValidatedImageForm(forms.ModelForm):
    """Admin form for ProductImage/ReviewImage: every upload passes catalog.images.image_prepare."""

    def clean_file(self):
        upload = self.cleaned_data.get("file")
        if upload is None or not hasattr(upload, "content_type"):
            return upload  # unchanged existing file
        try:
            prepared = image_prepare(source=upload.read(), name=upload.name)
        except ImageError as exc:
            raise forms.ValidationError(str(exc)) from exc
        for attr in ("width", "height", "sha256", "phash"):
            setattr(self.instance, attr, getattr(prepared, attr))
        self.instance.needs_embedding = True  # a new or replaced file needs a new vector
        if hasattr(self.instance, "copy_status"):
            # A new file gets a new copy check when it is embedded, before it can reach search.
            self.instance.copy_status = self.instance.CopyStatus.NONE
            self.instance.copy_of = None
            self.instance.copy_reason = ""
            self.instance.copy_hash_distance = self.instance.copy_similarity = None
        return prepared.content
